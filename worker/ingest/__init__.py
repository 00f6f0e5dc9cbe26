"""The order-queue consumer: messages in, events recorded, bad input dead-lettered.

Owns: reading batches from RabbitMQ or Redis (kombu, or the Redis list source), parsing each
message against the contract, one transaction per batch, the dead-letter queue and its replay.
May import worker.service, worker.process, config, store and models; never the other adapters.
"""
