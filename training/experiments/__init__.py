"""The experiments wing: the L × α sweep (``settings``, ``sweep``, ``sweep_report``), PPO tuning
(``tune``), the curve study (``curve_study``, ``curves_report``), the dynamic pool
(``dynamic_pool``, ``dynamic_pool_report``), learning from served feedback (``offpolicy``,
``feedback_simulation``) and reply budgets (``budgets``). Imports every wing below it; not
``specialists`` (the same level) nor ``cli``."""
