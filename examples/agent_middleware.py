"""A LangChain ``create_agent`` app whose every model call is routed by the shipped HierRouter policy.

    python examples/agent_middleware.py "What is 17 * 23?"

The offline default pool (SmolLM2-135M, the cloze specialist, Qwen2.5-Coder 0.5B and 1.5B) is
built with the library's member builder; the shipped policy decides before each model call from
the conversation so far, the call's index and the cost spent. Local members cannot call tools
(ChatHuggingFace has no tool calling), so this agent has none; an agent over endpoint members
(``EndpointSpec``) takes ``tools=[...]`` unchanged. Printed: the answer and the per-call route.
"""

from __future__ import annotations

import argparse

from langchain.agents import create_agent

from hierrouter_graph import HierRouterMiddleware, build_pool, default_config, default_policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("question", nargs="?", default="What is the capital of France? Answer in one word.")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    ns = parser.parse_args()
    config = default_config()
    config = config.model_copy(
        update={"models": [m.model_copy(update={"max_new_tokens": ns.max_new_tokens}) for m in config.models]}
    )
    pool = build_pool(config)
    middleware = HierRouterMiddleware(default_policy(config), pool, alpha=config.alpha)
    agent = create_agent(pool["smollm2-135m"].chat_model, middleware=[middleware])
    out = agent.invoke({"messages": [{"role": "user", "content": ns.question}]})
    print("answer:", out["messages"][-1].text)
    for call in out["hierrouter_trace"]:
        print(
            f"call {call['call']} (stage {call['stage']}): {call['model']} p={call['prob']:.2f} "
            f"tokens {call['tokens_in']}+{call['tokens_out']} cost {call['cost']:.4f}"
        )
    print(f"run cost C = {out['hierrouter_cost']:.4f}")


if __name__ == "__main__":
    main()
