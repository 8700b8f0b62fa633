"""Tasks to items: the task registry, document readers, task families (prompt rendering) and few-shot exemplars."""
