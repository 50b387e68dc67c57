"""`python -m course.cli`, as the `course` command."""

import sys

from course.cli import main

sys.exit(main())
