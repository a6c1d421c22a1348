import sys

from nemo_codert.export.cli import main

sys.exit(main())
