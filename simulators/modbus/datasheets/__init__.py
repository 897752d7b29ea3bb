"""Register tables of the simulated meter models, transcribed from the manufacturers' documents."""
