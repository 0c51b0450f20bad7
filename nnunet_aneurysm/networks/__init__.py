"""Plain torch modules (no nnU-Net imports), each satisfying nnU-Net's network contract."""
