"""The networks: encoders, the shared codebook, the CMoE-Adapter, CLUB, Cross-CPC, PMR, the model."""
