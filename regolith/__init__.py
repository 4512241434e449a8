"""regolith: fine-tune SegFormer-B0 to segment rover frames into regolith, rock and sky.

One module per stage; each verb runs as ``python -m regolith.<verb>`` and is one
MLproject entry point. See README.md.
"""

CLASSES = ("regolith", "rock", "sky")
IGNORE_INDEX = 255
