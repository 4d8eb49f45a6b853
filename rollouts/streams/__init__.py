"""Live rollout events: the Server-Sent Events streams, the committed-order
cursor they (and the notification dispatcher) read events with, and the
wake-up that tells waiting streams a transaction wrote events."""
