import sys

from tests.simulated_nvidia.controller import main

sys.exit(main())
