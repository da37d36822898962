import sys

from mlplatform.cli import main

sys.exit(main())
