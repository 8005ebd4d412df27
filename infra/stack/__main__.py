import sys

from infra.stack.cli import main

sys.exit(main())
