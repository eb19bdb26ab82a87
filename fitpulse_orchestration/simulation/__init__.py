"""Launch safety: a closed-loop simulation of the synthetic world's users living with a policy.

``closed_loop`` is the environment and the day loop, ``arms`` the policies it can test (the
real feed and push services, and baselines), ``report`` the per-arm metrics with confidence
intervals, the targets and the plots, ``canary`` a guarded rollout driven through the loop.
"""
