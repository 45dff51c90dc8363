"""The project's own demo models: a synthetic shapes data set and the script that trains on it."""
