"""`python -m trainer.compare CELL_DIR`: the child process of one grid cell (`trainer.compare.cell`)."""

import sys

from trainer.compare.cell import main

sys.exit(main(sys.argv[1:]))
