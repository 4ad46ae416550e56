import sys

from deepsweep.cli.main import main

sys.exit(main())
