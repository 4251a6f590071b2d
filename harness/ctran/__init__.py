"""C-Tran (Lanchantin et al., CVPR 2021): label masks, data, training and partial-label evaluation."""
