"""Stream PaCoRe's progress to the terminal: rounds, trajectories and tokens on a tqdm bar.

python examples/progress_bar.py "What is 17 * 23?" --rounds 8,2
"""

from __future__ import annotations

import argparse
import asyncio

from tqdm import tqdm

from pacore_graph import create_pacore_graph, model_from_env, resolve_rounds


async def solve(problem: str, rounds: str, max_tokens: int) -> str:
    """Runs PaCoRe with a progress bar over all trajectories of all rounds."""
    vector = resolve_rounds(rounds)
    answer = ""
    tokens = 0
    unfinished = 0  # failed, or stopped by a budget
    with model_from_env() as model, tqdm(total=sum(vector), unit="traj") as bar:
        graph = create_pacore_graph(model, rounds=rounds).compile()
        async for event in graph.astream(
            {"messages": [("user", problem)]},
            context={"max_tokens": max_tokens},
            stream_mode="custom",
        ):
            if event["type"] == "round_started":
                bar.set_description(f"round {event['round']}/{len(vector)} (K={event['k']})")
            elif event["type"] == "trajectory_finished":
                tokens += event["completion_tokens"] or 0
                bar.set_postfix(tokens=tokens, **({"unfinished": unfinished} if unfinished else {}))
                bar.update(1)
            elif event["type"] in ("trajectory_failed", "trajectory_stopped"):
                # Done too, without an answer: the bar still reaches its total.
                unfinished += 1
                bar.set_postfix(tokens=tokens, unfinished=unfinished)
                bar.update(1)
            elif event["type"] == "answer":
                answer = event["content"]
    return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problem", nargs="?", default="What is 17 * 23? Answer in \\boxed{}.")
    parser.add_argument("--rounds", default="4")
    parser.add_argument("--max-tokens", type=int, default=256)
    args = parser.parse_args()
    print(asyncio.run(solve(args.problem, args.rounds, args.max_tokens)))


if __name__ == "__main__":
    main()
