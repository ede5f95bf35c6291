"""The tasks wing (lowest): what an item is (``items``), where items come from (``benchmarks``,
``jsonl_datasets``, ``routing_data``), how a reply is judged (``answers``, ``code_tests``,
``metrics``) and THE reward R = Q − α·C (``reward``). Imports no other wing."""
