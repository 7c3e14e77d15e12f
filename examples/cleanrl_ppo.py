"""CleanRL-style PPO in one file, against the library's vector env with action masks.

    OPENBLAS_NUM_THREADS=1 python examples/cleanrl_ppo.py --total-steps 200000

Everything is here: the rollout buffer, GAE, the clipped objective, masked categorical sampling. It
talks to :class:`~recsim_personas.envs.vector.PersonaRecVectorEnv` directly (``gym.make_vec``
semantics, ``NEXT_STEP`` autoreset: the step after an episode ends returns the new session's first
observation with reward 0 and ``terminated = truncated = False``, so that step is masked out of the
loss), with the flat observation and ``env.action_masks()``. It prints the training return and,
at the end, the policy's evaluation with ``evaluate_policy`` next to popularity's.

``--smoke``: a small synthetic population and a few hundred steps (what CI runs).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--total-steps", type=int, default=200_000)
    p.add_argument("--num-envs", type=int, default=32)
    p.add_argument("--num-steps", type=int, default=32, help="rollout length per env")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--minibatches", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--gamma", type=float, default=0.95)
    p.add_argument("--gae-lambda", type=float, default=0.9)
    p.add_argument("--clip", type=float, default=0.2)
    p.add_argument("--ent-coef", type=float, default=0.003)
    p.add_argument("--episodes", type=int, default=200, help="evaluation sessions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)

    import torch
    from torch import nn

    from recsim_personas.envs.evaluation import evaluate_policy
    from recsim_personas.envs.policies import make_policy
    from recsim_personas.envs.vector import PersonaRecVectorEnv

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    objects = {}
    if args.smoke:
        from recsim_personas.envs.config import PersonaRecConfig
        from recsim_personas.envs.population import build_agent, synthetic_population

        pop = synthetic_population(n_users=30, n_items=90, seed=args.seed)
        objects = {"population": pop, "agent": build_agent(PersonaRecConfig(agent="mf"), pop)}
    options = {"observation": "flat", "cheap_agent": "mf", "horizon": 5 if args.smoke else 20}
    envs = PersonaRecVectorEnv(args.num_envs, **options, **objects)
    obs_dim = envs.single_observation_space.shape[0]
    n_actions = int(envs.single_action_space.n)
    features = torch.as_tensor(envs.item_features)

    class Agent(nn.Module):
        """Actor: logits = item_features @ W h(obs) + b_item; critic: an MLP."""

        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(obs_dim, 128), nn.Tanh())
            self.project = nn.Linear(128, features.shape[1], bias=False)
            self.item_bias = nn.Parameter(torch.zeros(n_actions))
            self.critic = nn.Sequential(nn.Linear(obs_dim, 128), nn.Tanh(), nn.Linear(128, 1))

        def logits(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            raw = self.project(self.body(x)) @ features.T + self.item_bias
            return torch.where(mask, raw, torch.tensor(-1e8))

        def value(self, x: torch.Tensor) -> torch.Tensor:
            return self.critic(x).squeeze(-1)

    agent = Agent()
    optim = torch.optim.Adam(agent.parameters(), lr=args.lr, eps=1e-5)
    t_steps, n = args.num_steps, args.num_envs
    buf_obs = torch.zeros(t_steps, n, obs_dim)
    buf_mask = torch.zeros(t_steps, n, n_actions, dtype=torch.bool)
    buf_act = torch.zeros(t_steps, n, dtype=torch.long)
    buf_logp, buf_rew, buf_val = (torch.zeros(t_steps, n) for _ in range(3))
    buf_done = torch.zeros(t_steps, n)  # 1 where the episode ended at this step
    buf_valid = torch.zeros(t_steps, n)  # 0 for the autoreset steps (action ignored)

    obs, _ = envs.reset(seed=args.seed)
    next_obs = torch.as_tensor(obs)
    resetting = np.zeros(n, dtype=bool)
    reward_scale = 1.0 / float(envs.population.scale.max)  # rewards in about [-0.2, 1]
    returns, ep_ret = [], np.zeros(n)
    start, step = time.perf_counter(), 0
    while step < args.total_steps:
        for t in range(t_steps):
            mask = torch.as_tensor(envs.action_masks())
            with torch.no_grad():
                dist = torch.distributions.Categorical(logits=agent.logits(next_obs, mask))
                action = dist.sample()
                buf_logp[t], buf_val[t] = dist.log_prob(action), agent.value(next_obs)
            buf_obs[t], buf_mask[t], buf_act[t] = next_obs, mask, action
            buf_valid[t] = torch.as_tensor(~resetting, dtype=torch.float32)
            obs, reward, term, trunc, _ = envs.step(action.numpy())
            done = term | trunc
            ep_ret += np.where(resetting, 0.0, reward)
            returns += ep_ret[done].tolist()
            ep_ret[done] = 0.0
            buf_rew[t] = torch.as_tensor(reward * reward_scale, dtype=torch.float32)
            buf_done[t] = torch.as_tensor(done, dtype=torch.float32)
            resetting = done
            next_obs = torch.as_tensor(obs)
            step += n
        # GAE over the rollout (an ended episode bootstraps nothing).
        with torch.no_grad():
            next_value = agent.value(next_obs)
            adv = torch.zeros(t_steps, n)
            last = torch.zeros(n)
            for t in reversed(range(t_steps)):
                nv = next_value if t == t_steps - 1 else buf_val[t + 1]
                live = 1.0 - buf_done[t]
                delta = buf_rew[t] + args.gamma * nv * live - buf_val[t]
                last = delta + args.gamma * args.gae_lambda * live * last
                adv[t] = last
            ret = adv + buf_val
        keep = buf_valid.reshape(-1).bool()
        b_obs, b_mask = buf_obs.reshape(-1, obs_dim)[keep], buf_mask.reshape(-1, n_actions)[keep]
        b_act, b_logp = buf_act.reshape(-1)[keep], buf_logp.reshape(-1)[keep]
        b_adv, b_ret = adv.reshape(-1)[keep], ret.reshape(-1)[keep]
        size = len(b_act)
        mb = max(size // args.minibatches, 1)
        for _ in range(args.epochs):
            order = torch.randperm(size)
            for s in range(0, size - mb + 1, mb):  # full minibatches only
                i = order[s : s + mb]
                dist = torch.distributions.Categorical(logits=agent.logits(b_obs[i], b_mask[i]))
                ratio = (dist.log_prob(b_act[i]) - b_logp[i]).exp()
                a = (b_adv[i] - b_adv[i].mean()) / (b_adv[i].std() + 1e-8)
                pg = -torch.min(ratio * a, ratio.clamp(1 - args.clip, 1 + args.clip) * a).mean()
                v_loss = 0.5 * ((agent.value(b_obs[i]) - b_ret[i]) ** 2).mean()
                loss = pg + 0.5 * v_loss - args.ent_coef * dist.entropy().mean()
                optim.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), 0.5)
                optim.step()
        if returns:
            print(f"steps {step:>8,}  {step / (time.perf_counter() - start):>6,.0f} steps/s  "
                  f"training return {np.mean(returns[-200:]):6.2f}")

    def greedy(observation: np.ndarray, info: dict) -> np.ndarray:
        with torch.no_grad():
            x, m = torch.as_tensor(observation), torch.as_tensor(info["action_mask"]).bool()
            return agent.logits(x, m).argmax(dim=1).numpy()

    eval_env = PersonaRecVectorEnv(32, **options, **{k: v for k, v in
                                                     {"population": envs.population, "agent": envs.agent}.items()})
    ppo = evaluate_policy(eval_env, greedy, episodes=args.episodes, seed=args.seed)
    popularity = evaluate_policy(eval_env, make_policy("popularity", eval_env, seed=args.seed),
                                 episodes=args.episodes, seed=args.seed)
    for name, res in (("PPO (greedy)", ppo), ("popularity", popularity)):
        mean, lo, hi = res.summary["return"]
        print(f"{name:<14} return {mean:6.2f} [{lo:6.2f}, {hi:6.2f}] over {res.episodes} sessions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
