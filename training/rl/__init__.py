"""The RL wing: the replayed graph as a gymnasium env (``env``), PPO's arguments (``args``), the
algorithm (``ppo``: rollout, GAE, update), its loop and THE set-up path (``train``:
``train_router``), rollout bookkeeping (``rollout_data``), checkpoints (``checkpointing``) and the
policy kinds it trains (``setup``). Imports ``tasks`` and ``replay``."""
