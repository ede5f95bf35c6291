"""Routing policies: what decides the next hop.

``protocol`` is the contract every router meets (``RoutingPolicy.decide`` on the route state);
``alpha`` owns α's rules; ``inputs`` turns a route state into tensors; ``trained`` holds the PPO
actor-critic and its base, ``dynamic`` the descriptor policy whose pool can change; ``encoder``
embeds the context; ``files`` and ``signature`` save, load and check a policy against a config.
Policies never import members' engines or the graph.
"""
