"""The NASS training objective: SI-SNR with PIT (:mod:`~nass.losses.pit`), the patch-wise
contrastive term (:mod:`~nass.losses.pcl`), and both per utterance (:mod:`~nass.losses.objective`).
"""
