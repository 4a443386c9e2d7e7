import sys

from dwgf.cli import main

sys.exit(main())
