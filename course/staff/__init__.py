"""Staff: the people at the treatment centre who write, review and publish courses.

- accounts: staff members and their roles; who is acting (Actor) and what they may do;
- sign_in: one-time emailed sign-in links and the sessions they open; API tokens;
- audit: the log of every staff action;
- drafts: courses written in the browser, checked and previewed like files, reviewed and
  published; offering: which courses the sign-up page offers.
"""
