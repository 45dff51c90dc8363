"""HTTP controllers, one per route family."""
