import sys

from tests.simulated_profiles.controller import main

sys.exit(main())
