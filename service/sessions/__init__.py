"""Browser sessions: an API key pasted once at ``/login`` becomes an HttpOnly session cookie."""
