"""The decide stage: scores -> approve / review / decline, with per-node scores and reasons.

Without ``decision.graph`` the one routed model's score meets the review and decline
thresholds. With it, a small graph of rules, model, switch, ensemble, challenger and decision
nodes runs in-process over each batch with numpy row masks (no topic per step): the config
and its load-time checks in ``config``, the start-up checks and the engine's entry point in
``stage``, evaluation in ``graph`` (conditions in ``conditions``, record columns from
``columns``), thresholds and overrides in ``decide``, reasons (fired rules, attributions once
wired) in ``reasons``.

Threads: the feeding thread builds a chunk's columns; the inference thread that scores a batch
owns everything a graph run makes (nothing outlives the call); the stage itself is read-only
after start.
"""
