"""`python -m sead.cache ...`: the cache's command line (`sead.cache.tool`)."""

import sys

from sead.cache.tool import main

sys.exit(main())
