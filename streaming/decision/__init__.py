"""The decide stage: scores -> approve / review / decline, with per-node scores and reasons.

Without ``decision.graph`` the one routed model's score meets the review and decline
thresholds. With it, a small graph of rules, model, switch, ensemble, challenger and decision
nodes runs in-process over each batch with numpy row masks (no topic per step): config and
start-up checks in ``config`` and ``compile``, evaluation in ``graph``, thresholds and
overrides in ``decide``, reasons (fired rules, later attributions) in ``reasons``.
"""
