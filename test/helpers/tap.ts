/** The type of the `t` a tap test function receives (tap exports no name for it). */
import type tap from 'tap';

export type Tap = Parameters<Parameters<typeof tap.test>[0]>[0];
