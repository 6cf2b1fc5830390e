import sys

from sprockets_cache.cli import main

sys.exit(main())
