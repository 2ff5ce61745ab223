"""The OpenAI-compatible server backend (``mentor_backend=openai`` / ``intern_backend=openai``): the
backend itself (``backend``), the HTTP transport with its retries and probe (``transport``), and the
request bodies and response fields of the APIs (``messages``)."""
