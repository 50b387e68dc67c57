"""Writing courses: load a sequence folder, check it as `course lessons check` does, publish it.

Staff-facing, and heavy (the readability scorer, the word lists, YAML): nothing on the sending
path imports this package.
"""

from course.authoring.check import SAMPLE_LINKS, LessonReport, check, personas
from course.authoring.load import LessonSpec, SequenceSpec, load_sequence
from course.authoring.publish import publish

__all__ = [
    "SAMPLE_LINKS",
    "LessonReport",
    "LessonSpec",
    "SequenceSpec",
    "check",
    "load_sequence",
    "personas",
    "publish",
]
