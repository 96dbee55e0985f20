"""Model rollouts: the control topic that sets routing weights, and the monitor (a Faust app,
imported only by ``streaming monitor``) that judges versions."""
