"""What every modgate HTTP process answers the same way, the gateway's workers and the handler
pool's alike: request ids, the error shape, the metrics endpoint; and what a URL's scheme
implies (`urls`). Imports nothing of the processes themselves, so both can import it."""
