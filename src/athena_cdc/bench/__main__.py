"""``python -m athena_cdc.bench``."""

import sys

from athena_cdc.bench import main

if __name__ == "__main__":
    sys.exit(main())
