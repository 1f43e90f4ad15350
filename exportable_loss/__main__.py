import sys

from exportable_loss.cli import main

sys.exit(main())
