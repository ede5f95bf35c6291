"""Pool members: what answers a hop.

A member is a chat model with its price and token counter (``pool.PoolMember``), built from a
``ModelSpec`` by ``build.build_pool`` — a local transformers or OpenVINO model (``local``,
``generation``, ``microbatch``, ``openvino_engine``, ``engine_choice``, ``quantize``), a LoRA
adapter over a shared base (``adapters``), a cloze scorer (``cloze``), a program-aided member
(``program``, ``program_reply``), an inference server (``remote``) or a replayed record
(``replay``); ``confidence`` reads how sure a reply was, ``prepare`` converts models before use.
Members never import the policy or the graph.
"""
