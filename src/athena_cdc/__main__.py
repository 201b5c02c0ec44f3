import sys

from athena_cdc.entry import main

sys.exit(main())
