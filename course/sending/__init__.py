"""Sending: the hot path from a due enrollment to an email the SMTP server accepted.

- dispatch: the beat tick (hand out lost work again, turn due enrollments into deliveries);
- jobs: take the lease on a batch and load it in one query;
- compose: render each email, once per persona variant, filled in per reader;
- batch: the send loop; outcomes: retries, bounces, releases; recording: "sent", exactly once;
- mailer: the kept-open SMTP connection.
"""

from course.sending.batch import BatchResult, send_batch
from course.sending.compose import Composer
from course.sending.dispatch import tick
from course.sending.mailer import Mailer
from course.smtp import SmtpTarget

__all__ = ["BatchResult", "Composer", "Mailer", "SmtpTarget", "send_batch", "tick"]
