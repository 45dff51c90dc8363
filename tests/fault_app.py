"""Test-only launcher: ``python -m app`` whose models raise on one marked image.

After decoding, every image a request can send is a valid BGR array that Ultralytics predicts
without error, so no request can make a real ``predict`` fail. This wraps Ultralytics'
``Model.predict`` in this process only (the server itself has no such hook, so nothing here is
reachable from a request to a real server): a call whose images include an image of one solid
colour, :data:`POISON_RGB`, raises ``RuntimeError``. Run as ``python tests/fault_app.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

POISON_RGB = (1, 2, 3)


def main() -> int:
    from app.offline import configure_ultralytics

    configure_ultralytics()  # before Ultralytics is imported, as the server does
    import numpy as np
    from ultralytics.engine.model import Model

    poison_bgr = np.array(POISON_RGB[::-1], np.uint8)
    original = Model.predict

    def poisoned(image: object) -> bool:
        return isinstance(image, np.ndarray) and bool((image == poison_bgr).all())

    def predict(self, source=None, stream=False, predictor=None, **kwargs):  # noqa: ANN001
        images = source if isinstance(source, list) else [source]
        if any(poisoned(image) for image in images):
            raise RuntimeError("injected fault: a poison image reached predict")
        return original(self, source, stream, predictor, **kwargs)

    Model.predict = predict

    from app.__main__ import main as serve

    return serve()


if __name__ == "__main__":
    raise SystemExit(main())
