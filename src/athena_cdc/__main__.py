import sys

from athena_cdc.cli import main

sys.exit(main())
