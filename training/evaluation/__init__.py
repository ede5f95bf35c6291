"""The evaluation wing: every strategy a router is compared with (``strategies``, the learned
kNN/MLP routers in ``learned_routers``), paired statistics (``statistics``), the tables
(``tables``), ``evaluate`` itself, the seed spread (``seeds``), cost-quality curves (``curves``)
and the markdown/console reports (``reports``). May import ``tasks``, ``replay`` and ``rl`` (it
needs no ``rl`` today: it reads saved policies through the library)."""
