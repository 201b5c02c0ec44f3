"""The ops console: a page (``/console``) and the read-only JSON API it reads (``/api/*``).

Nothing here runs unless someone asks: counters and seqs the server keeps anyway are
sampled when the API is called, so a server nobody watches pays nothing for it.
"""
