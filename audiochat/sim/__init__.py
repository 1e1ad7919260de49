"""The simulator: the tools that render a scene, the agents that write dialogues, and the dataset
builds."""
