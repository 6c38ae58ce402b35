"""What several nodes share through Redis (issue 18): the event bus and the rate limits. control/wiring.py picks
these or the one-node implementations; nothing else knows which it got."""
