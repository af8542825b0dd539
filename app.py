"""The Gradio app: ``python app.py`` (the same as ``msc-app`` once installed; see ``msc/app.py``)."""

import sys

from msc.app import main

if __name__ == "__main__":
    sys.exit(main())
