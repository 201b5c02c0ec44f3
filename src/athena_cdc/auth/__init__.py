"""Authentication (JWT) and authorisation (channel patterns); off unless configured."""
