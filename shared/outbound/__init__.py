"""F&O -> MES: business events as Event Grid delivers them, their handlers, what is published to MES and how."""
