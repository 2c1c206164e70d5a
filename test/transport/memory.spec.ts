import { createMemoryNetwork } from '@shoal/core'
import { laneTransportCompliance } from './compliance.js'

laneTransportCompliance('in-memory network', async () => {
  const net = createMemoryNetwork()
  return { a: net.transport('peer-a'), b: net.transport('peer-b'), bAddress: 'peer-b', close: async () => {} }
})
