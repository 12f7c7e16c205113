import sys

from namm.cli import main

sys.exit(main())
