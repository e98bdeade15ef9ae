"""The networks: encoders, shared codebook, CMoE-Adapter, CLUB, Cross-CPC, PMR and the model."""
