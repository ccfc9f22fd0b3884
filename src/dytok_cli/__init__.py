"""dytok: question-aware visual-token compression (DyToK) for video LLMs."""
