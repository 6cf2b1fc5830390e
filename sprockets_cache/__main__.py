import sys

from sprockets_cache.ops.cli import main

sys.exit(main())
